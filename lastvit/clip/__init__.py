"""Image-text (CLIP) training with a LastViT image tower: the model (`modeling_lastvit_clip`, saved as
remote code), scene captions and a download-free tokenizer (`captions`), and the trainer (`training`)."""
