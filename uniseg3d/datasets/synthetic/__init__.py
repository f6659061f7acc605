"""A synthetic indoor benchmark written in the raw ScanNet, ScanRefer and Replica formats.

`catalog` (object kinds, colours, label-map rows), `rooms` (what each room type holds),
`furniture` (object meshes from primitives), `floorplan` (rooms, walls, doors, windows),
`layout` (furniture placement), `mesh` (noise, colours, one scene mesh), `relations` (geometry
read back from points), `referring` (descriptions: specs, text, parser, checker), `writer` (the
raw files) and `generate` (one scene, start to end).
"""
