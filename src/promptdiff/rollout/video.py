"""Play one prompted episode in an environment rendered offscreen, and keep its frames.

`render_episode` is `evaluate_sequential` for a single episode with `render_mode="rgb_array"`:
the same reset seed (`episode_seed(seed, task, episode)`), so the episode's return is the one the
evaluator reports for that episode, plus RGB frames (T, H, W, 3) uint8 of the reset state and of
every `frame_every`-th step.

MuJoCo renders offscreen through the OpenGL platform that `MUJOCO_GL` names: `egl` (a GPU, or
Mesa's software EGL), `osmesa` (software), or `glfw` (needs a display). When no platform works,
or the family has nothing to render (point_robot), creating the environment or drawing its first
frame raises `RenderingUnavailable`, with the cause; nothing is stepped before that. Warnings the
rendering libraries print while they probe the platforms (GLFW errors on a machine without a
display, for instance), and the error gymnasium's half-built viewer raises when it is collected,
are silenced during that first frame, so that the caller's one message is the only one.

The MuJoCo families (cheetah, ant) are drawn at `width` x `height` by their model's tracking
camera "track"; Meta-World's environments at their own size, reduced by striding to at most
`max_side` pixels.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import sys
import warnings

import gymnasium as gym
import numpy as np

from promptdiff.envs import TaskFamily, get_family, make_env
from promptdiff.rollout.dt_policy import DTPolicy
from promptdiff.rollout.evaluator import episode_seed


class RenderingUnavailable(RuntimeError):
    """The environment cannot be rendered offscreen here (no OpenGL platform, or nothing to draw)."""


def _env_class(fam: TaskFamily) -> type:
    entry = gym.spec(fam.env_id).entry_point
    return gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry


def _sized(cls: type) -> bool:
    """Whether an environment class takes MuJoCo's width / height / camera keywords."""
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def _shrink(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    if max_side is None or max(frame.shape[:2]) <= max_side:
        return frame
    stride = -(-max(frame.shape[:2]) // max_side)
    return frame[::stride, ::stride]


def open_rendered_env(family: str | TaskFamily, task: int, width: int = 240, height: int = 180) -> gym.Env:
    """A task's environment that renders RGB arrays, or RenderingUnavailable (nothing drawn yet)."""
    fam = get_family(family) if isinstance(family, str) else family
    cls = _env_class(fam)
    if "rgb_array" not in getattr(cls, "metadata", {}).get("render_modes", []):
        raise RenderingUnavailable(f"{fam.name} cannot be rendered: its environment draws no RGB frames")
    extra = {"width": width, "height": height, "camera_name": "track"} if _sized(cls) else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            env = make_env(fam, task, render_mode="rgb_array", **extra)
        except Exception as err:  # noqa: BLE001 - any failure here means: cannot render this family
            raise RenderingUnavailable(f"{fam.name} cannot be rendered: {type(err).__name__}: {err}") from err
    return env


@contextlib.contextmanager
def _quiet_unraisable():
    """Mute "Exception ignored in __del__" reports while a failed renderer is collected: gymnasium's
    half-built OffScreenViewer raises AttributeError in its __del__ when no OpenGL context was made."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = hook


def _first_frame(env: gym.Env):
    """(frame, None), or (None, reason) when no frame can be drawn; the libraries' warnings are silenced."""
    reason = None
    with _quiet_unraisable(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return env.render(), None
        except Exception as err:  # noqa: BLE001 - the platform's own error type varies (mujoco, OpenGL, EGL)
            reason = f"{type(err).__name__}: {err}"
    return None, reason


def render_episode(policy: DTPolicy, family: str | TaskFamily, task: int, prompt, seed: int = 0, episode: int = 0,
                   frame_every: int = 1, width: int = 240, height: int = 180, max_side: int | None = 240,
                   target_return: float | None = None) -> dict:  # fmt: skip
    """Roll `policy` out for one episode of `task` with `prompt` (P = 1), rendering as it goes.

    Returns {"frames": (T, H, W, 3) uint8, "return": float, "length": int, "task": int}.
    Raises RenderingUnavailable before the first step when nothing can be drawn.
    """
    fam = get_family(family) if isinstance(family, str) else family
    if frame_every < 1:
        raise ValueError(f"frame_every must be >= 1, got {frame_every}")
    env = open_rendered_env(fam, task, width, height)
    try:
        obs, _ = env.reset(seed=episode_seed(seed, task, episode))
        first, reason = _first_frame(env)
        if reason is not None:
            raise RenderingUnavailable(f"MuJoCo could not render offscreen ({reason})")
        if first is None or np.asarray(first).ndim != 3:
            raise RenderingUnavailable(f"{fam.name}: the environment returned no RGB frame")
        frames = [_shrink(np.asarray(first, dtype=np.uint8), max_side)]
        target = fam.target_return if target_return is None else float(target_return)
        one = np.ones(1, bool)
        policy.reset(prompt, np.full(1, target), horizon=fam.horizon)
        total, length, done = 0.0, 0, False
        while not done:
            action = policy.act(np.asarray(obs)[None], one)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            policy.record(np.array([reward]), one)
            total += float(reward)
            length += 1
            done = bool(terminated or truncated)
            if length % frame_every == 0 or done:
                frames.append(_shrink(np.asarray(env.render(), dtype=np.uint8), max_side))
    finally:
        env.close()
    return {"frames": np.stack(frames), "return": total, "length": length, "task": int(task)}
