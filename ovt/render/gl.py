"""The `gl` backend: moderngl on Mesa's EGL (llvmpipe), no display and no GPU needed.

One context per worker process (creating one costs ~80 ms and EGL contexts do not survive fork); the per-object
GPU objects (buffers, vertex arrays, textures) are released after each object so a long library does not leak.
Shading: ambient + one directional key light, two-sided (|n.l|) because many catalogue meshes have flipped normals.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import numpy as np

from ovt.render.cameras import View
from ovt.render.normalize import NormalisedMesh

if TYPE_CHECKING:  # imported lazily at run time: it needs a GL library
    import moderngl

_VERT = """
#version 330
uniform mat4 mvp;
in vec3 in_pos; in vec3 in_nrm; in vec2 in_uv; in vec4 in_col;
out vec3 v_nrm; out vec2 v_uv; out vec4 v_col;
void main() { gl_Position = mvp * vec4(in_pos, 1.0); v_nrm = in_nrm; v_uv = in_uv; v_col = in_col; }
"""
_FRAG = """
#version 330
uniform sampler2D tex; uniform bool use_tex;
uniform vec3 light_dir; uniform float ambient; uniform float key;
in vec3 v_nrm; in vec2 v_uv; in vec4 v_col;
out vec4 f_color;
void main() {
    vec4 c = v_col;
    if (use_tex) c *= texture(tex, v_uv);
    if (c.a < 0.5) discard;               // alpha-tested cut-outs (leaves, fences); no sorting needed
    float shade = ambient + key * abs(dot(normalize(v_nrm), light_dir));
    f_color = vec4(min(c.rgb * shade, vec3(1.0)), 1.0);
}
"""


def perspective(fov_deg: float, near: float, far: float, aspect: float = 1.0) -> np.ndarray:
    f = 1.0 / math.tan(math.radians(fov_deg) / 2)
    return np.array(
        [
            [f / aspect, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
            [0, 0, -1, 0],
        ]
    )


def _mat_bytes(m: np.ndarray) -> bytes:
    return np.ascontiguousarray(m.T, dtype="f4").tobytes()  # GLSL expects column-major


def _uniform(prog: moderngl.Program, name: str) -> moderngl.Uniform:
    """A uniform of _VERT/_FRAG: indexing a Program is typed as any member (uniform, block, attribute, varying)."""
    return cast("moderngl.Uniform", prog[name])


class GLRenderer:
    name = "gl"

    def __init__(self, size: int, msaa: int = 4):
        import moderngl

        self._mgl = moderngl
        self.size = size
        # backend='egl' always: the default tries X11 and fails on a headless machine
        # the moderngl stubs annotate **settings as dict values, though each setting is a plain keyword value
        self.ctx = moderngl.create_standalone_context(backend="egl")  # type: ignore[arg-type]
        self.prog = self.ctx.program(vertex_shader=_VERT, fragment_shader=_FRAG)
        shape = (size, size)
        self.fbo = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer(shape, 4)], depth_attachment=self.ctx.depth_renderbuffer(shape)
        )
        self.msaa_fbo = None
        if msaa:
            self.msaa_fbo = self.ctx.framebuffer(
                color_attachments=[self.ctx.renderbuffer(shape, 4, samples=msaa)],
                depth_attachment=self.ctx.depth_renderbuffer(shape, samples=msaa),
            )
        self._white = self.ctx.texture((1, 1), 4, b"\xff\xff\xff\xff")

    @property
    def version(self) -> str:
        info = self.ctx.info
        version = self._mgl.__version__  # type: ignore[attr-defined]  # the moderngl stubs omit __version__
        return f"moderngl {version}; {info['GL_RENDERER']}; {info['GL_VERSION']}"

    def render(
        self, mesh: NormalisedMesh, views: list[View], light: dict, background: tuple[float, float, float] | None = None
    ) -> list[np.ndarray]:
        """RGBA uint8 images (rows top-to-bottom), one per view; alpha is the coverage.

        background=None: straight alpha (RGB of uncovered pixels is 0). With a background colour the RGB channels
        come out already composited over it: GL clears to that colour and the MSAA resolve blends edges into it,
        which costs nothing, whereas unpremultiplying and compositing on the CPU cost ~3 ms per view."""
        ctx, prog = self.ctx, self.prog
        owned: list[moderngl.Buffer | moderngl.VertexArray | moderngl.Texture] = []  # this object's GPU objects
        draws = []
        try:
            for part in mesh.parts:
                n = len(part.positions)
                uvs = part.uvs if part.uvs is not None else np.zeros((n, 2), np.float32)
                data = np.hstack([part.positions, part.normals, uvs, part.colors]).astype("f4")
                vbo = ctx.buffer(data.tobytes())
                vao = ctx.vertex_array(prog, [(vbo, "3f 3f 2f 4f", "in_pos", "in_nrm", "in_uv", "in_col")])
                owned += [vbo, vao]
                tex = None
                if part.texture is not None and part.uvs is not None:
                    img = np.ascontiguousarray(part.texture[::-1])  # GL's texture rows start at the bottom
                    tex = ctx.texture((img.shape[1], img.shape[0]), 4, img.tobytes())
                    tex.build_mipmaps()  # textures are minified a lot at 224 px: avoid aliasing
                    tex.filter = (self._mgl.LINEAR_MIPMAP_LINEAR, self._mgl.LINEAR)
                    owned.append(tex)
                draws.append((vao, tex))
            _uniform(prog, "light_dir").value = tuple(light["direction"])
            _uniform(prog, "ambient").value = float(light["ambient"])
            _uniform(prog, "key").value = float(light["key"])
            _uniform(prog, "tex").value = 0
            target = self.msaa_fbo or self.fbo
            out = []
            for v in views:
                pose = np.asarray(v.pose)
                near, far = max(v.distance - 1.5, 0.05), v.distance + 1.5  # unit sphere lies in between
                _uniform(prog, "mvp").write(_mat_bytes(perspective(v.fov, near, far) @ np.linalg.inv(pose)))
                target.use()
                ctx.enable(self._mgl.DEPTH_TEST)
                ctx.disable(self._mgl.CULL_FACE)
                target.clear(*(background or (0.0, 0.0, 0.0)), 0.0)
                for vao, tex in draws:
                    (tex or self._white).use(0)
                    _uniform(prog, "use_tex").value = tex is not None
                    vao.render(self._mgl.TRIANGLES)
                if self.msaa_fbo is not None:
                    ctx.copy_framebuffer(self.fbo, self.msaa_fbo)
                raw = np.frombuffer(self.fbo.read(components=4), np.uint8).reshape(self.size, self.size, 4)
                # without MSAA alpha is 0 or 255 and uncovered RGB is the clear colour: nothing to unpremultiply
                straight = background is None and self.msaa_fbo is not None
                out.append(_unpremultiply(raw[::-1]) if straight else raw[::-1])
            return out
        finally:
            for o in owned:
                o.release()

    def close(self) -> None:
        self.ctx.release()


def _unpremultiply(rgba: np.ndarray) -> np.ndarray:
    """The MSAA resolve averages in the transparent clear colour, i.e. the result is premultiplied by coverage."""
    a = rgba[..., 3:4].astype(np.float32)
    rgb = np.where(a > 0, rgba[..., :3] * (255.0 / np.maximum(a, 1)), 0)
    return np.concatenate([np.clip(rgb + 0.5, 0, 255).astype(np.uint8), rgba[..., 3:4]], axis=-1)
