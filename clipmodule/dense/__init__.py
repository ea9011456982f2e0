"""Dense zero-shot prediction: MaskCLIP segmentation (`segment`) on the per-patch embeddings of
`clipmodule.models.dense` (`CLIP.encode_image_dense`), and the `clipmodule segment` command."""
