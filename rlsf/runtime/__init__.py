"""What every stage shares at run time and no stage owns: the device and precision decision
(``device``), checkpoints, the metric log and its plots, the cache folder, seeding, timing and the
data order (``utils``).
"""
