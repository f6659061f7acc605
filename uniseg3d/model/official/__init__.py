"""The `official` recipe: UniSeg3D as its released code (dk-liang/UniSeg3D c272954) computes it.

Modules: `language` (the frozen CLIP text tower and its MLP), `decoder` (the unified query
decoder with mask-pooling cosine classifiers), `network` (backbone + queries + decoder + IoU
head), `postprocess` (matrix NMS and the six tasks' rules), `inference` (one forward, six
tasks), `checkpoint` (code-free reading of mmengine checkpoints and the key map onto these
modules). The backbone is the shared `uniseg3d.model.backbone.SparseUNet` with the official
grid and BatchNorm settings. Module attribute names follow the official state dict, so that its
keys map onto them one to one (the backbone's are renamed, `checkpoint.OFFICIAL_KEY_RULES`).
"""
