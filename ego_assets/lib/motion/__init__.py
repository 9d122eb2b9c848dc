"""World-frame hand motion and its segmentation into atomic actions (the ``segments`` asset).

- :func:`ego_assets.lib.motion.world.build_hand_world`: hand tracks x camera poses -> ``hand_world``
- :func:`ego_assets.lib.motion.segment.segment_by_wrist_speed`: ``hand_world`` -> segment ids + ``segments``
- :mod:`ego_assets.lib.motion.checks`: checks on ``segments``
- :mod:`ego_assets.lib.motion.synthetic`: trajectories with known boundaries (tests, benchmark)

Nothing is imported here, so that importing one submodule stays cheap.
"""
