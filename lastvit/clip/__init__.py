"""Image-text (CLIP) training with a LastViT image tower: scene captions and a download-free tokenizer
(`captions`), the multi-process contrastive loss (`contrastive`) and the trainer (`training`).

The model itself, `LastViTCLIPConfig` / `LastViTCLIPModel`, is a model a checkpoint carries and lives in
`modeling_lastvit` (`from modeling_lastvit import LastViTCLIPModel`). A bare `import lastvit.clip` stays
light (no torch): `lastvit-train-clip --help` imports this package.
"""
