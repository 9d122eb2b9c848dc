"""LeRobot v3.0 export: per-partition staging, incremental assembly, validation, card and Hub upload.

Modules: ``features`` (names and action spaces), ``actions`` (state/action maths), ``writer``
(``stage_partition``, ``assemble``), ``validate`` (``validate_dataset``), ``publish`` (``write_card``,
``push``). Nothing heavy (torch, lerobot.datasets) is imported until a function needs it.
"""
