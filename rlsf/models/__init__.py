"""The models: loading (Hugging Face ids, local folders, the embedded SmolLM2 converted from its
GGUF), LoRA, saving; the parts the algorithms use (decoder body, value head); the reference
policy of the KL terms; and the outcome reward model.
"""
