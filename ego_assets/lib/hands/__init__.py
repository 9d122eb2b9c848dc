"""Hands stage (``hand_tracks``): per-frame hand keypoints, metric 3D joints in the camera frame,
wrist rotation, finger joint angles and a trusted left/right, per tracked hand.

Modules: :mod:`.model` (provisioning of the MediaPipe model), :mod:`.backends` (the ``hands`` backend
interface and the ``mediapipe`` / ``mediapipe_lite`` backends), :mod:`.lifting` (2D + shape -> metric
3D), :mod:`.tracking` (identities, handedness), :mod:`.cleanup` (outliers, gaps), :mod:`.skeleton`
(joint conventions, wrist frame, finger pose), :mod:`.checks` (quality checks), :mod:`.preview`
(skeleton overlay). Nothing heavy is imported here.
"""
