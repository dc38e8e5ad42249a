"""A procedural sound world: short clips of known events with captions built from them.

Every clip is 2.56 s at 16 kHz (256 mel frames of the engine's front-end), made of foreground events of up to two
classes (beeps at two pitches, knocks, clicks, noise bursts, rising chirps, bells), each repeated one to four
times, mixed over an optional steady background (a low hum or soft hiss). The caption names what is there
("three knocks and a bell over a low hum"), and every foreground event carries its onset and offset, so an edit's
onsets can be checked against the input's. Rendering is a pure function of a :class:`ClipSpec` and a seed, so an
edit case can render "the same clip with one thing changed" (the reference for style transfer and inpainting).

Clips are normalised the way the engine normalises its input (DC removed, peak 0.5).

``render(spec, sr=44100, stereo=True)`` renders the same clip for a 44.1 kHz stereo model (the toy flow model of
the Stable Audio 3 family): the same events at the same onsets, synthesised at that rate, each event panned by a
constant-power law to a position drawn from its own seed (the background stays centred). The default 16 kHz mono
render is unchanged by these options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

SR = 16000
SECONDS = 2.56
N = int(SR * SECONDS)  # 40960 samples = 256 hops of 160

# class → (singular, plural, nominal duration in s)
CLASSES: dict[str, tuple[str, str, float]] = {
    "low_beep": ("low beep", "low beeps", 0.18),
    "high_beep": ("high beep", "high beeps", 0.18),
    "knock": ("knock", "knocks", 0.10),
    "click": ("click", "clicks", 0.02),
    "burst": ("noise burst", "noise bursts", 0.25),
    "chirp": ("rising chirp", "rising chirps", 0.30),
    "bell": ("bell", "bells", 0.90),
}
BACKGROUNDS: dict[str, str] = {"hum": "over a low hum", "hiss": "over soft hiss"}
COUNT_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}
MIN_GAP = 0.2  # s between any two foreground onsets (keeps onsets well defined for F1)


@dataclass(frozen=True)
class Event:
    cls: str
    onset: float  # s
    offset: float  # s (nominal end; decaying sounds fade before it)
    gain: float = 1.0


@dataclass(frozen=True)
class ClipSpec:
    events: tuple[Event, ...]
    background: str | None = None  # None | "hum" | "hiss"
    bg_gain: float = 0.25
    seed: int = 0  # drives the noise of the render

    @property
    def caption(self) -> str:
        return caption_of(self.events, self.background)

    def with_events(self, events: list[Event] | tuple[Event, ...]) -> ClipSpec:
        return replace(self, events=tuple(sorted(events, key=lambda e: e.onset)))


@dataclass
class Clip:
    spec: ClipSpec
    wave: np.ndarray = field(repr=False)  # (N,) float32, peak 0.5; (2, n) when rendered in stereo
    sr: int = SR

    @property
    def caption(self) -> str:
        return self.spec.caption

    @property
    def onsets(self) -> list[float]:
        return [e.onset for e in self.spec.events]


def _phrase(cls: str, count: int) -> str:
    sing, plur, _ = CLASSES[cls]
    if count == 1:
        return ("an " if sing[0] in "aeiou" else "a ") + sing
    return f"{COUNT_WORDS[count]} {plur}"


def caption_of(events: tuple[Event, ...] | list[Event], background: str | None) -> str:
    """'three knocks and a bell over a low hum': classes in order of first appearance, counted."""
    order: list[str] = []
    counts: dict[str, int] = {}
    for e in sorted(events, key=lambda e: e.onset):
        if e.cls not in counts:
            order.append(e.cls)
            counts[e.cls] = 0
        counts[e.cls] += 1
    parts = [_phrase(c, min(counts[c], 4)) for c in order]
    text = " and ".join(parts) if parts else ""
    if background:
        bg = BACKGROUNDS[background]
        text = f"{text} {bg}" if text else ("a low hum" if background == "hum" else "soft hiss")
    return text or "silence"


# ---------------------------------------------------------------------------------------------- sampling specs

def place_onsets(rng: np.random.Generator, count: int, taken: list[float], lo: float = 0.05,
                 hi: float = SECONDS - 0.35) -> list[float]:
    """``count`` onsets in [lo, hi] at least MIN_GAP from each other and from ``taken``."""
    out: list[float] = []
    for _ in range(200):
        if len(out) == count:
            break
        t = float(rng.uniform(lo, hi))
        if all(abs(t - u) >= MIN_GAP for u in (*taken, *out)):
            out.append(round(t, 4))
    return out


def make_events(rng: np.random.Generator, cls: str, count: int, taken: list[float]) -> list[Event]:
    dur = CLASSES[cls][2]
    hi = SECONDS - (0.35 if cls != "bell" else 0.6)
    evs = []
    for t in place_onsets(rng, count, taken, hi=hi):
        evs.append(Event(cls, t, round(min(SECONDS, t + dur), 4), float(rng.uniform(0.6, 1.0))))
    return evs


def sample_spec(rng: np.random.Generator) -> ClipSpec:
    """A random clip: one or two event classes (1-4 each), background none/hum/hiss."""
    names = list(CLASSES)
    ncls = 1 if rng.random() < 0.5 else 2
    classes = list(rng.choice(names, size=ncls, replace=False))
    events: list[Event] = []
    for c in classes:
        count = int(rng.integers(1, 5)) if c != "bell" else int(rng.integers(1, 3))
        events += make_events(rng, str(c), count, [e.onset for e in events])
    r = rng.random()
    background = None if r < 0.5 else "hum" if r < 0.75 else "hiss"
    return ClipSpec(tuple(sorted(events, key=lambda e: e.onset)), background, float(rng.uniform(0.15, 0.3)),
                    int(rng.integers(0, 2**31)))


# ---------------------------------------------------------------------------------------------- rendering

def _env(n: int, attack: float, release: float, sr: int = SR) -> np.ndarray:
    a = max(1, int(attack * sr))
    r = max(1, int(release * sr))
    env = np.ones(n)
    env[:a] = np.linspace(0, 1, a) if a < n else np.linspace(0, 1, n)[: min(a, n)]
    if r < n:
        env[-r:] *= np.linspace(1, 0, r)
    return env


def render_event(e: Event, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    dur = max(0.005, e.offset - e.onset)
    n = int(dur * sr)
    t = np.arange(n) / sr
    c = e.cls
    if c in ("low_beep", "high_beep"):
        f = (440.0 if c == "low_beep" else 1760.0) * rng.uniform(0.98, 1.02)
        x = np.sin(2 * np.pi * f * t) * _env(n, 0.005, 0.02, sr)
    elif c == "knock":
        f = 180.0 * rng.uniform(0.9, 1.1)
        x = (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2.3 * f * t)) * np.exp(-t / 0.02)
        x[: int(0.003 * sr)] += 0.8 * rng.standard_normal(int(0.003 * sr))
        x *= _env(n, 0.001, 0.01, sr)
    elif c == "click":
        x = np.diff(rng.standard_normal(n + 1)) * np.exp(-t / 0.003)
    elif c == "burst":
        x = 0.6 * rng.standard_normal(n) * _env(n, 0.005, 0.03, sr)
    elif c == "chirp":
        f0, f1 = 400.0, 3200.0
        phase = 2 * np.pi * f0 * dur / math.log(f1 / f0) * ((f1 / f0) ** (t / dur) - 1)
        x = np.sin(phase) * _env(n, 0.01, 0.03, sr)
    elif c == "bell":
        f = 880.0 * rng.uniform(0.97, 1.03)
        x = sum(a * np.sin(2 * np.pi * f * k * t) * np.exp(-t / tau)
                for k, a, tau in ((1.0, 1.0, 0.35), (2.76, 0.5, 0.2), (5.4, 0.25, 0.1)))
        x = x * _env(n, 0.002, 0.05, sr)
    else:
        raise ValueError(c)
    return e.gain * x / max(1e-9, np.max(np.abs(x)))


def render_background(kind: str, gain: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    n = round(SECONDS * sr)
    t = np.arange(n) / sr
    if kind == "hum":
        f = 100.0 * rng.uniform(0.97, 1.03)
        x = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2 * f * t) + 0.25 * np.sin(2 * np.pi * 3 * f * t)
        x /= 1.75
    elif kind == "hiss":
        w = rng.standard_normal(n)
        x = np.convolve(w, np.ones(3) / 3, mode="same") * 0.6
    else:
        raise ValueError(kind)
    return gain * x


def render(spec: ClipSpec, *, gap: tuple[float, float] | None = None, sr: int = SR,
           stereo: bool = False) -> Clip:
    """The clip of ``spec`` (deterministic), peak-normalised to 0.5; ``gap`` zeroes a time range (inpainting).

    ``sr`` and ``stereo`` render the same events for another model's format: (2, n) when ``stereo``, each event
    panned by its own seed (drawn after its waveform, so the mono render does not change).
    """
    rng = np.random.default_rng(spec.seed)
    n = round(SECONDS * sr)
    x = np.zeros((2, n) if stereo else n)
    if spec.background:
        x += render_background(spec.background, spec.bg_gain, rng, sr)
    for e in spec.events:
        ev_rng = np.random.default_rng([spec.seed, int(e.onset * 1e4), list(CLASSES).index(e.cls)])
        y = render_event(e, ev_rng, sr)
        a = int(e.onset * sr)
        y = y[: n - a]
        if stereo:  # constant-power pan, position in [-0.7, 0.7]
            theta = (float(ev_rng.uniform(-0.7, 0.7)) + 1) * math.pi / 4
            x[0, a:a + len(y)] += math.cos(theta) * math.sqrt(2) * y
            x[1, a:a + len(y)] += math.sin(theta) * math.sqrt(2) * y
        else:
            x[a:a + len(y)] += y
    if gap is not None:
        a, b = int(gap[0] * sr), int(gap[1] * sr)
        x[..., a:b] = 0.0
    x = x - x.mean(axis=-1, keepdims=True)
    peak = np.max(np.abs(x))
    if peak > 1e-9:
        x = x * (0.5 / peak)
    return Clip(spec, x.astype(np.float32), sr)


def clip(seed: int, *, sr: int = SR, stereo: bool = False) -> Clip:
    """Clip number ``seed`` of the world (training clips use seeds < HELD_OUT)."""
    return render(sample_spec(np.random.default_rng([seed, 7])), sr=sr, stereo=stereo)


HELD_OUT = 1_000_000  # seeds ≥ this are never used in training


def dataset(n: int, start: int = 0, *, sr: int = SR, stereo: bool = False) -> list[Clip]:
    return [clip(start + i, sr=sr, stereo=stereo) for i in range(n)]


def all_captions() -> list[str]:
    """Every caption the world can produce (for text-side sanity checks)."""
    out = set()
    names = list(CLASSES)
    for bg in (None, *BACKGROUNDS):
        for a in names:
            for ca in range(1, 5):
                evs = [Event(a, 0.1 * i, 0.1 * i + 0.05) for i in range(ca)]
                out.add(caption_of(evs, bg))
                for b in names:
                    if b == a:
                        continue
                    for cb in range(1, 5):
                        evb = [Event(b, 1 + 0.1 * i, 1.05 + 0.1 * i) for i in range(cb)]
                        out.add(caption_of(evs + evb, bg))
    return sorted(out)
