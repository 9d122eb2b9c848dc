"""Model backends on tiny random weights, saved to disk and loaded through the same path as the real
weights (the GPU backends' tests run on CPU in seconds)."""

from __future__ import annotations

from pathlib import Path


def tiny_depthpro(dest: str | Path) -> str:
    """A DepthPro with a few thousand random weights (seed 0) and its image processor in ``dest``."""
    import torch
    from transformers import DepthProConfig, DepthProForDepthEstimation, DepthProImageProcessorFast

    sub = dict(model_type="dinov2", hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=32, patch_size=4, image_size=32, out_indices=[2], out_features=["stage2"],
               stage_names=["stem", "stage1", "stage2"])
    cfg = DepthProConfig(patch_size=32, fusion_hidden_size=16, intermediate_hook_ids=[1, 0],
                         intermediate_feature_dims=[8, 8], scaled_images_ratios=[0.5, 1.0],
                         scaled_images_overlap_ratios=[0.0, 0.25], scaled_images_feature_dims=[16, 16],
                         merge_padding_value=1, use_fov_model=True, num_fov_head_layers=1,
                         image_model_config=dict(sub), patch_model_config=dict(sub), fov_model_config=dict(sub))
    torch.manual_seed(0)
    DepthProForDepthEstimation(cfg).save_pretrained(dest)
    DepthProImageProcessorFast(size={"height": 64, "width": 64}).save_pretrained(dest)
    return str(dest)
