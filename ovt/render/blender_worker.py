"""Blender (bpy 5.0.1, Cycles CPU) worker: renders ONE object, run as `<bpy-python> blender_worker.py job.json`.

It runs in the separate bpy interpreter (bpy pins numpy 1.26, so it cannot share the main venv) and imports nothing
from the main stack except `ovt.render.normalize` (numpy + trimesh only) so that the normalisation matrix is
computed by exactly the same code as in the gl backend. The OBJ is imported without axis conversion, so Blender's
world coordinates are the raw mesh coordinates; the matrix then maps them into the normalised Y-up frame and the
camera poses (OpenGL convention, which is also Blender's camera convention) are used unchanged.

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
    # forward=Y, up=Z is Blender's own frame: no axis conversion, vertices keep their file coordinates
    bpy.ops.wm.obj_import(filepath=job["mesh"], forward_axis="Y", up_axis="Z")
    m = Matrix([list(r) for r in norm.matrix.tolist()])
    for ob in bpy.context.scene.objects:
        if ob.type == "MESH":
            ob.matrix_world = m @ ob.matrix_world

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


if __name__ == "__main__":
    main(sys.argv[1])
