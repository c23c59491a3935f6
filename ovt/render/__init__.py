"""Render stage (issue 3): cameras, normalisation, gl + blender backends, webdataset shards.

Kept import-free on purpose: `ovt.render.normalize` is also imported inside the bpy interpreter (numpy 1.26, no
pydantic), which must not pull in the rest of the package. Import submodules directly.
"""
