"""Rollouts: from rendered prompts to sampled token ids and their log-probabilities.

``engines`` holds the sampling engines behind one function (:func:`rlsf.rollout.engines.generate`,
``rollout.engine``): rlsf's own KV-cached loop (``builtin``), Hugging Face ``generate`` and
vLLM (``vllm_engine``, colocated, the policy's weights pushed in before each rollout); ``fused_step`` the
fused decoding step of the built-in loop for Llama-style models; ``collect`` one batch of
experience: sample, hand each finished row to the check service, attach certificates and token
rewards. A new engine plugs in beside the others in ``engines``.
"""
