"""Camera geometry: the ``calibrations`` and ``camera_poses`` stages. One line per module:

- ``calibration``: intrinsics of the proxy, undistortion, static-vs-moving camera classification.
- ``calibration_backends``: the calibration stage's backends and their contract (``CalibrationResult``).
- ``odometry``: the pose stage of a whole video (``estimate``) and its contract (``PoseResult``).
- ``pose_backends``: the pose stage's backends (the OpenCV odometry).
- ``pose_inputs``: checks of the pose stage's inputs (frames, calibration, clips) and ``PoseInputError``.
- ``tracker``: monocular visual odometry over one clip (``ClipOdometry``).
- ``bundle_adjustment``: sliding-window bundle adjustment of the tracker's last keyframes.
- ``two_view``: bearings, rotation-only RANSAC, triangulation, reprojection error.
- ``hand_masks``: masks of the hands, so that their features are not taken for camera motion.
- ``stitch``: Sim(3) stitching of the clips' trajectories and the metric scale cues (depth, hands).
- ``checks``: quality checks of ``calibrations`` and ``camera_poses`` as pure functions.
- ``render``: a synthetic scene with exact ground truth, for the tests and benchmarks.

Conventions (docs/architecture.md §2): OpenCV camera frame (x right, y down, z forward), metres; poses are
camera-to-world ``T_wc``; quaternions in scipy's (x, y, z, w) order.
"""
