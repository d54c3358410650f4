"""Unit tests of the clip planner and the speech gate, on level profiles (no audio, no PyAV)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mimo_watchd.audio.gate import MIN_SOUND, WARMUP, SpeechGate
from mimo_watchd.audio.levels import LevelMeter, NoiseFloor, mean_db
from mimo_watchd.audio.plan import Cut, Planner, halve

FLOOR, SPEECH = -55.0, -20.0
SKIP, MARGIN, TARGET, OVERLAP, PAUSE = 200, 30, 6000, 200, 19


def profile(seconds: float, seed: int = 1) -> np.ndarray:
    """Levels of a line at FLOOR dBFS (+-1 dB of jitter), 100 frames a second."""
    rng = np.random.default_rng(seed)
    return (FLOOR + rng.normal(0, 1, round(seconds * 100))).astype(np.float32)


def talk(levels: np.ndarray, start: float, seconds: float, word: float = 0.3,
         gap: float = 0.25) -> np.ndarray:
    """Puts words (``word`` s at SPEECH, ``gap`` s apart) from ``start`` for ``seconds``."""
    t = start
    while t + word <= start + seconds:
        levels[round(t * 100) : round((t + word) * 100)] = SPEECH
        t += word + gap
    return levels


def plan(levels: np.ndarray, batch: int = 4096, *, skip: int | None = SKIP,
         target: int = TARGET, end_at_gaps: bool = False) -> list[Cut]:
    """Every clip of ``levels``, fed ``batch`` frames at a time."""
    gate = SpeechGate(skip=skip, margin=MARGIN, above_floor_db=10.0, silence_floor_db=-60.0,
                      sound_ceiling_db=-25.0)
    planner = Planner(gate, target=target, overlap=OVERLAP, min_pause=PAUSE,
                      end_at_gaps=end_at_gaps)
    cuts = []
    for i in range(0, len(levels), batch):
        cuts += planner.feed(levels[i : i + batch])
    return cuts + planner.finish()


def sent(cuts: list[Cut], frames: int) -> np.ndarray:
    """A mask of the ``frames`` frames: those sent by ``cuts``."""
    mask = np.zeros(frames, dtype=bool)
    for c in cuts:
        for a, b in c.pieces:
            mask[a:b] = True
    return mask


def test_plan_does_not_depend_on_how_levels_are_batched() -> None:
    """Feeding 1, 37 or 100 000 frames at a time gives the same clips (retries cut alike)."""
    levels = talk(talk(profile(400), 3, 150), 200, 150)
    reference = plan(levels, 100_000)
    assert len(reference) >= 6
    for batch in (1, 37, 4096):
        assert plan(levels, batch) == reference


def test_long_silences_are_left_out_but_for_their_margins() -> None:
    """A 20 s silence between two talks is not sent except 0.3 s on each side; a 1.5 s one is,
    and so are silences of at most skip at the file's start and end; longer ones are not."""
    levels = talk(profile(65), 5, 10)
    levels = talk(levels, 35, 10)  # 20 s of line noise between the talks
    levels[3550:3700] = FLOOR  # a 1.5 s pause inside the second talk stays
    mask = sent(plan(levels), len(levels))
    speech = levels > SPEECH - 1
    first, last = np.flatnonzero(speech)[[0, -1]]
    assert mask[speech].all()
    assert not mask[: first - MARGIN].any() and mask[first - MARGIN : first].all()
    assert mask[3550:3700].all()
    gap_start = np.flatnonzero(speech[:2000])[-1] + 1
    assert mask[gap_start : gap_start + MARGIN].all()
    assert not mask[gap_start + MARGIN : 3500 - MARGIN].any()
    assert mask[3500 - MARGIN : 3500].all() and not mask[last + 1 + MARGIN :].any()
    short_edges = talk(profile(12), 1.5, 9)
    assert sent(plan(short_edges), len(short_edges)).all()


def test_clicks_alone_are_no_speech() -> None:
    """Line noise with isolated clicks shorter than MIN_SOUND frames gives no clip at all."""
    levels = profile(120)
    for at in range(500, 12000, 700):
        levels[at : at + MIN_SOUND // 3] = -10.0
    assert plan(levels) == []


def test_silence_only_gives_no_clip_and_skip_off_sends_everything() -> None:
    """A hang-up (line noise only) has no clip; without skipping it is sent whole."""
    levels = profile(90)
    assert plan(levels) == []
    assert sent(plan(levels, skip=None), len(levels)).all()


def test_clips_span_at_most_the_target_and_cut_in_the_latest_quiet_pause() -> None:
    """With pauses everywhere, clips span <= target and end in the latest pause of their
    later half; none overlaps."""
    levels = talk(profile(300), 0.5, 299, word=0.4, gap=0.3)
    cuts = plan(levels)
    assert len(cuts) == 6 and all(c.overlap == 0 and len(c.pieces) == 1 for c in cuts)
    for cut in cuts[:-1]:
        start, end = cut.pieces[0]
        assert end - start <= TARGET
        assert end - start > TARGET - 70  # the latest pause, not any pause of the later half
        assert (levels[end - 10 : end + 10] < FLOOR + 10).all()  # inside a pause
    for prev, cut in itertools.pairwise(cuts):
        assert cut.pieces[0][0] == prev.pieces[-1][1]


def test_the_quietest_pause_wins_over_a_later_noisier_one() -> None:
    """A pause 12 dB quieter than the later ones is chosen even though it comes earlier."""
    levels = talk(profile(120) + 12, 0.5, 119, word=0.4, gap=0.3)
    quiet = np.flatnonzero(levels[3500:4000] < -30)[:5] + 3500
    levels[quiet[0] : quiet[0] + 25] = FLOOR  # one pause far quieter than the +12 dB others
    assert plan(levels)[0].pieces[0][1] in range(quiet[0], quiet[0] + 25)


def test_without_pauses_clips_overlap() -> None:
    """Speech without a single 200 ms pause is cut at the target with an overlap."""
    levels = np.full(15_000, SPEECH, dtype=np.float32)
    levels[::7] = SPEECH - 6  # syllable dips, never silence
    levels[:300] = FLOOR  # a floor to measure
    cuts = plan(levels, skip=None)
    starts = [c.pieces[0][0] for c in cuts]
    assert starts == [0, 6000 - OVERLAP, 12000 - 2 * OVERLAP]
    assert [c.overlap for c in cuts] == [0, OVERLAP, OVERLAP]


def test_a_silence_left_out_in_the_later_half_ends_the_clip() -> None:
    """A clip ends where the last left-out silence of its later half begins."""
    levels = talk(profile(200), 1, 40)
    levels = talk(levels, 45, 30)  # 4 s of silence at 41-45 s (in the later half of clip 1)
    cuts = plan(levels)
    speech_end = np.flatnonzero(levels[:4500] > SPEECH - 1)[-1] + 1
    assert cuts[0].pieces[-1][1] == speech_end + MARGIN
    assert cuts[1].pieces[0][0] == 4500 - MARGIN


def test_a_clip_joins_talks_across_short_left_out_silences() -> None:
    """Talks separated by 5 s silences share a clip (as pieces) while it spans <= target."""
    levels = profile(120)
    for start in (1, 11, 21, 31):
        talk(levels, start, 4)
    cuts = plan(levels)
    assert len(cuts) == 1 and len(cuts[0].pieces) == 4
    assert cuts[0].pieces[-1][1] - cuts[0].pieces[0][0] <= TARGET


def test_subtitle_mode_ends_a_clip_at_every_left_out_silence() -> None:
    """With end_at_gaps every talk is its own clip, cut where its silence begins."""
    levels = profile(120)
    for start in (1, 11, 21, 31):
        talk(levels, start, 4)
    cuts = plan(levels, end_at_gaps=True, target=1500)
    assert [len(c.pieces) for c in cuts] == [1, 1, 1, 1]


def test_the_floor_adapts_quiet_speech_over_a_quiet_line_is_kept() -> None:
    """Talk at -45 dBFS over a -70 dBFS line is speech; hiss at -40 dBFS alone is not."""
    quiet = talk(profile(60) - 15, 5, 20)
    quiet[quiet > -30] = -45.0
    assert sent(plan(quiet), len(quiet))[quiet == -45.0].all()
    assert plan(profile(60) + 15) == []


def test_halve_prefers_a_join_then_a_pause_near_the_middle_then_overlaps() -> None:
    """A clip is halved where a left-out silence was, else in a pause, else with overlap."""
    levels = np.full(3000, SPEECH, dtype=np.float32)
    assert halve(levels, [1400], silence_db=-45, min_pause=PAUSE, overlap=OVERLAP) == (
        (0, 1400, 0), (1400, 3000, 0))
    levels[1100:1130] = FLOOR
    levels[1700:1730] = FLOOR
    assert halve(levels, [], silence_db=-45, min_pause=PAUSE, overlap=OVERLAP) == (
        (0, 1715, 0), (1715, 3000, 0))
    levels[:] = SPEECH
    assert halve(levels, [100], silence_db=-45, min_pause=PAUSE, overlap=OVERLAP) == (
        (0, 1500, 0), (1300, 3000, 200))


def test_levels_and_floor() -> None:
    """Frame levels are RMS dBFS whatever the blocks, without DC or drift, and a steady hum
    keeps a steady level; the floor is a low percentile."""
    t = np.arange(48_000) / 16000
    tone = (0.5 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)

    def levels_of(pcm: np.ndarray, block: int) -> np.ndarray:
        meter = LevelMeter(160)
        parts = [meter.feed(pcm[i : i + block]) for i in range(0, len(pcm), block)]
        return np.concatenate([*parts, meter.finish()])

    levels = levels_of(tone, 999)
    assert len(levels) == 300 and np.array_equal(levels, levels_of(tone, 48_000))
    assert np.allclose(levels, 20 * np.log10(0.5 / np.sqrt(2)), atol=0.05)
    assert np.allclose(levels_of(tone // 100 + 3000, 777), levels - 40, atol=0.1)  # DC offset
    hum = (0.01 * 32767 * np.sin(2 * np.pi * 50 * t + 1)).astype(np.int16)
    assert np.ptp(levels_of(hum, 500)[2:-2]) < 0.1
    floor = NoiseFloor()
    floor.add(np.concatenate([np.full(95, -20.0), np.full(5, -61.0)]).astype(np.float32))
    assert floor.floor_db() == pytest.approx(-61.0, abs=0.5) and floor.peak_db == -20.0
    assert mean_db(np.array([-10.0, -120.0])) == pytest.approx(-13.0, abs=0.02)


def test_warmup_delays_the_first_decision_and_look_ahead_is_bounded() -> None:
    """Nothing is decided before WARMUP frames; afterwards decisions trail the input by at
    most skip + margin + one step."""
    gate = SpeechGate(skip=SKIP, margin=MARGIN, above_floor_db=10.0, silence_floor_db=-60.0,
                      sound_ceiling_db=-25.0)
    levels = talk(profile(200), 0, 200)
    gate.feed(levels[: WARMUP - 1])
    assert gate.known == 0
    for end in range(WARMUP, len(levels), 250):
        gate.feed(levels[gate.levels.end : end])
        assert end - gate.known <= SKIP + MARGIN + 100


def test_a_constant_loud_signal_is_sound_not_line_noise() -> None:
    """Minutes of gapless words at a steady -9 dBFS are all sent: no line hisses that loud."""
    levels = np.full(12_000, -9.0, dtype=np.float32)
    assert sent(plan(levels), len(levels)).all()


def test_minutes_of_quiet_talk_without_pauses_do_not_raise_the_floor() -> None:
    """After 30 s of a -55 dBFS line, ten minutes of talk at -35 dBFS that never pauses (its
    dips stay 6 dB down) are all sent: the floor measured first does not creep up into them."""
    levels = talk(profile(30), 5, 20)
    quiet = np.full(60_000, -35.0, dtype=np.float32)
    quiet[::3] = -41.0
    levels = np.concatenate([levels, quiet])
    mask = sent(plan(levels), len(levels))
    assert mask[3000:].all()
