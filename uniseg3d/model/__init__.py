"""The UniSeg3D model: backbone, text encoder, unified decoder, criterion and post-processing."""
