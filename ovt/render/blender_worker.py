"""Blender (bpy 5.0.1, Cycles CPU) worker: renders ONE object, run as `<bpy-python> blender_worker.py job.json`.

It runs in the separate bpy interpreter (bpy pins numpy 1.26, so it cannot share the main venv) and imports nothing
from the main stack except `ovt.render.normalize` (numpy + trimesh only) so that the normalisation matrix is
computed by exactly the same code as in the gl backend. Each format goes through bpy's own importer, set (or
corrected) so that Blender's world coordinates are the raw file coordinates trimesh reads; the matrix then maps
them into the normalised Y-up frame and the camera poses (OpenGL convention, which is also Blender's camera
convention) are used unchanged. A format bpy cannot import (COLLADA left Blender in 5.0) arrives as GLB: the
main process converts it with trimesh (`ovt.render.blender.to_glb`), as this interpreter has no COLLADA reader.
Materials are then made to shade like gl: diffuse only, alpha-tested cut-outs (alpha < 0.5 is a
hole), texture colour taken as stored (not premultiplied by its alpha), both faces drawn. Coincident back-to-back
faces (a double-sided sheet modelled as two faces) are first pulled apart by a hair: Cycles traces shadows and
ambient light, and a ray leaving one of them would stop on the other at distance ~0 and leave it black.

Job JSON: {repo_root, mesh, rotation, size, samples, threads, light: {direction, ambient, key},
           views: [{pose (4x4), fov, distance}], out_dir}. Writes out_dir/NNN.png (RGBA, straight alpha).
"""

import json
import math
import sys


def main(job_path: str) -> None:
    job = json.load(open(job_path))
    sys.path.insert(0, job["repo_root"])
    import bpy
    from mathutils import Matrix, Vector

    from ovt.render.normalize import load_normalised

    norm = load_normalised(job["mesh"], job["rotation"])
    bpy.ops.wm.read_factory_settings(use_empty=True)
    to_raw = import_mesh(bpy, job["mesh"])
    m = Matrix([list(r) for r in norm.matrix.tolist()]) @ to_raw
    for ob in bpy.context.scene.objects:
        if ob.parent is None:  # roots only: children follow their parents
            ob.matrix_world = m @ ob.matrix_world
    bpy.context.view_layer.update()
    check_normalised(bpy, job["mesh"])
    separate_back_to_back(bpy)
    shade_like_gl(bpy)

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = int(job["samples"])
    scene.cycles.use_denoising = False
    if job.get("threads"):
        scene.render.threads_mode = "FIXED"
        scene.render.threads = int(job["threads"])
    scene.render.resolution_x = scene.render.resolution_y = int(job["size"])
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True  # background composited by the caller, same as the gl backend
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"  # AgX (the default) washes colours out

    # ambient: a uniform grey world; key: a sun shining from `direction` towards the origin
    world = bpy.data.worlds.new("ambient")
    world.use_nodes = True
    bg = world.node_tree.nodes["Background"]
    bg.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    bg.inputs["Strength"].default_value = float(job["light"]["ambient"])
    scene.world = world
    sun_data = bpy.data.lights.new("key", type="SUN")
    sun_data.energy = float(job["light"]["key"]) * math.pi  # irradiance E gives radiance E/pi on white diffuse
    sun = bpy.data.objects.new("key", sun_data)
    scene.collection.objects.link(sun)
    d = Vector(job["light"]["direction"]).normalized()
    sun.rotation_euler = d.to_track_quat("Z", "Y").to_euler()  # the sun's -Z (its light) points at -d

    cam_data = bpy.data.cameras.new("cam")
    cam_data.sensor_fit = "VERTICAL"
    cam = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    for i, v in enumerate(job["views"]):
        cam_data.angle_y = math.radians(v["fov"])
        cam_data.clip_start = max(v["distance"] - 1.5, 0.05)
        cam_data.clip_end = v["distance"] + 1.5
        cam.matrix_world = Matrix(v["pose"])
        scene.render.filepath = f"{job['out_dir']}/{i:03d}.png"
        bpy.ops.render.render(write_still=True)


# forward=Y, up=Z is Blender's own frame: these importers then keep the file's coordinates unchanged
_NATIVE = {".obj": "obj_import", ".ply": "ply_import", ".stl": "stl_import"}


def import_mesh(bpy, path: str):
    """Import one mesh file; returns the matrix from Blender's world to the file's raw coordinates."""
    from mathutils import Matrix

    ext = path[path.rfind(".") :].lower()
    if ext in _NATIVE:
        getattr(bpy.ops.wm, _NATIVE[ext])(filepath=path, forward_axis="Y", up_axis="Z")
        return Matrix.Identity(4)
    if ext not in (".glb", ".gltf"):
        # no bpy importer (e.g. .dae in Blender 5): BlenderRenderer.render_file converts such files to GLB first
        raise RuntimeError(f"{path}: the blender worker imports OBJ/PLY/STL/glTF only (convert with to_glb)")
    bpy.ops.import_scene.gltf(filepath=path)
    # glTF is Y-up; the importer turns it Z-up with +90 deg about X. Undo that: world = raw file coordinates.
    return Matrix.Rotation(math.radians(-90.0), 4, "X")


def check_normalised(bpy, path: str) -> None:
    """After normalisation every vertex lies in the unit sphere; anything else means the import frame is wrong."""
    r = 0.0
    for ob in bpy.context.scene.objects:
        if ob.type == "MESH":
            mw, verts = ob.matrix_world, ob.data.vertices
            used = {i for poly in ob.data.polygons for i in poly.vertices}  # like the gl side: face vertices only
            r = max([r, *((mw @ verts[i].co).length for i in used)])
    if r == 0.0:
        raise RuntimeError(f"{path}: bpy imported no mesh vertices")
    if not 0.8 < r < 1.25:
        raise RuntimeError(
            f"{path}: imported geometry does not match the normalisation (radius {r:.3f}, expected "
            f"1): the importer's axis or unit handling differs from trimesh's"
        )


# normal quantum and plane-distance quantum (normalised units) under which two faces count as one plane
_PLANE_NORMAL_Q, _PLANE_DIST_Q = 0.01, 1e-5
# how far (normalised units) each face of a back-to-back pair moves along its own normal: far below a pixel
_SHEET_OFFSET = 1e-4


def separate_back_to_back(bpy) -> int:
    """Pull coplanar back-to-back faces apart by a hair; returns how many faces moved.

    Double-sided sheets are often modelled as two coincident faces with opposite normals (a chair's caned seat, a
    curtain). gl draws whichever wins the depth test and casts no shadows, but in Cycles a ray leaving one face hits
    its twin at distance ~0, so the face shadows itself from the key light and from the ambient world: black
    wherever the twin is opaque. Each such face is detached from its neighbours and moved along its own normal, so
    the pair no longer coincides and the face turned towards the camera is the one it sees. Faces touching another
    part face to face (a plate on a box) pair up the same way; moving them is just as harmless.
    """
    import bmesh
    import numpy as np

    obs = []
    for ob in bpy.context.scene.objects:
        lin = np.array(ob.matrix_world)[:3, :3]
        if ob.type == "MESH" and len(ob.data.polygons) and abs(np.linalg.det(lin)) > 1e-12:
            obs.append(ob)
    keys, negs = [], []
    for ob in obs:
        me, mw = ob.data, np.array(ob.matrix_world)
        n = len(me.polygons)
        nrm, ctr = np.empty(3 * n), np.empty(3 * n)
        me.polygon_normals.foreach_get("vector", nrm)
        me.polygons.foreach_get("center", ctr)
        nw = nrm.reshape(-1, 3) @ np.linalg.inv(mw[:3, :3])  # normals go by the inverse transpose
        length = np.linalg.norm(nw, axis=1)
        nw /= np.maximum(length, 1e-12)[:, None]
        d = (nw * (ctr.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3])).sum(1)
        key, neg = _plane_key(np, nw, d), _plane_key(np, -nw, -d)
        key[length < 1e-12], neg[length < 1e-12] = -1, -2  # a zero-area face has no plane: never in a pair
        keys.append(key)
        negs.append(neg)
    if not obs:
        return 0
    every = np.concatenate(keys)
    todo: dict[str, tuple] = {}  # per mesh datablock (instances share one): faces to move, local step
    for ob, neg in zip(obs, negs):
        # the twin may have rounded into the neighbouring distance bin
        paired = np.isin(neg, every) | np.isin(neg - 1, every) | np.isin(neg + 1, every)
        if paired.any():
            step = _SHEET_OFFSET / max(ob.matrix_world.to_scale())  # this instance's local units
            mask, old = todo.get(ob.data.name, (paired, step))
            todo[ob.data.name] = (mask | paired, max(old, step))
    moved = 0
    for name, (mask, step) in todo.items():
        me = bpy.data.meshes[name]
        bm = bmesh.new()
        bm.from_mesh(me)
        bm.faces.ensure_lookup_table()
        faces = [bm.faces[i] for i in np.flatnonzero(mask)]
        bmesh.ops.split_edges(bm, edges=list({e for f in faces for e in f.edges}))  # keeps faces and their order
        done = set()
        for f in faces:
            for v in f.verts:
                if v not in done:  # after the split a vertex has one face; still, never move one twice
                    done.add(v)
                    v.co += f.normal * step
        bm.to_mesh(me)
        bm.free()
        me.update()
        moved += len(faces)
    return moved


def _plane_key(np, normals, dist):
    """One int64 per face from its quantised plane (unit normal, signed distance to the origin)."""
    q = np.rint(normals / _PLANE_NORMAL_Q).astype(np.int64) + 128
    qd = np.rint(dist / _PLANE_DIST_Q).astype(np.int64) + 2**21
    return ((q[:, 0] * 256 + q[:, 1]) * 256 + q[:, 2]) * 2**23 + qd


def shade_like_gl(bpy) -> None:
    for img in bpy.data.images:
        img.alpha_mode = "CHANNEL_PACKED"  # colour as stored: not darkened where the texture's alpha is low
    for mat in bpy.data.materials:
        mat.use_backface_culling = False
        if not mat.use_nodes:
            continue
        nodes, links = mat.node_tree.nodes, mat.node_tree.links
        for bsdf in [n for n in nodes if n.type == "BSDF_PRINCIPLED"]:
            bsdf.inputs["Metallic"].default_value = 0.0  # glTF's default is metallic 1: a mirror of the world
            bsdf.inputs["Roughness"].default_value = 1.0
            bsdf.inputs["Specular IOR Level"].default_value = 0.0
            for link in list(bsdf.inputs["Metallic"].links) + list(bsdf.inputs["Roughness"].links):
                links.remove(link)
            # alpha test at 0.5 like gl's discard: a hole or fully opaque, never half-transparent
            src = None
            if bsdf.inputs["Alpha"].links:
                src = bsdf.inputs["Alpha"].links[0].from_socket
            else:
                tex = _base_texture(bsdf)
                if tex is not None:
                    src = tex.outputs["Alpha"]
            if src is not None:
                cut = nodes.new("ShaderNodeMath")
                cut.operation = "GREATER_THAN"
                cut.inputs[1].default_value = 0.5
                links.new(src, cut.inputs[0])
                links.new(cut.outputs[0], bsdf.inputs["Alpha"])
            elif bsdf.inputs["Alpha"].default_value < 0.5:
                bsdf.inputs["Alpha"].default_value = 0.0
            else:
                bsdf.inputs["Alpha"].default_value = 1.0


def _base_texture(bsdf):
    """The image node feeding the base colour, directly or through colour-mixing nodes."""
    stack = list(bsdf.inputs["Base Color"].links)
    while stack:
        node = stack.pop().from_node
        if node.type == "TEX_IMAGE":
            return node
        for inp in node.inputs:
            stack.extend(inp.links)
    return None


if __name__ == "__main__":
    main(sys.argv[1])
