"""Camera geometry: intrinsics and undistortion (``calibration``), static-vs-moving camera, monocular
visual odometry (``odometry``), Sim(3) stitching of per-clip trajectories (``stitch``), quality checks
(``checks``) and a small synthetic renderer with exact ground truth (``render``) for tests and benchmarks.

Conventions (docs/architecture.md §2): OpenCV camera frame (x right, y down, z forward), metres; poses are
camera-to-world ``T_wc``; quaternions in scipy's (x, y, z, w) order.
"""
