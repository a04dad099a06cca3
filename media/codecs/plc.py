"""Packet-loss concealment by pitch-period waveform repetition, after the method ITU-T G.711 Appendix I
describes (written from that description; no reference code used).

While audio arrives, the last ~49 ms are kept. When a frame is lost the pitch period is estimated by
normalized cross-correlation over that history, and the last period is repeated. A longer loss widens the
repeated stretch to two, then three periods (a single period repeated for long sounds buzzy), fading in
each change; after the first 10 ms the output is attenuated by 20 % per 10 ms, so it is silent after
60 ms. When audio comes back, its start is cross-faded with the continued synthetic signal over 4 ms, plus
4 ms per further 10 ms lost (at most 10 ms).

Unlike Appendix I this runs without the 3.75 ms output delay: the repetition starts one period back, which
continues a periodic signal at the loss; the wrap-around of the repeated stretch is smoothed by blending
its tail into the samples that precede it. Everything scales with the sample rate (8 kHz for G.711, and
48 kHz for the PyAV Opus backend, whose decoder has no PLC).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from media.codecs.base import CodecError, Pcm

Float = npt.NDArray[np.float64]

_MIN_PERIOD_8K = 40  # 200 Hz
_MAX_PERIOD_8K = 120  # 66.7 Hz
_CORRELATION_WINDOW_8K = 160  # 20 ms analysed for the pitch
_BLOCK_MS = 10  # attenuation and period-count steps
_ATTENUATION_PER_BLOCK = 0.2
_MAX_PERIODS = 3


class WaveformConcealer:
    """Feed every good frame through :meth:`good_frame`; call :meth:`conceal` for each lost stretch."""

    def __init__(self, sample_rate: int = 8000) -> None:
        if sample_rate < 8000 or (sample_rate % 8000 and sample_rate % 4000):
            raise ValueError(f"sample rate {sample_rate} Hz is not supported for PLC")
        scale = sample_rate / 8000
        self.sample_rate = sample_rate
        self._min_period = round(_MIN_PERIOD_8K * scale)
        self._max_period = round(_MAX_PERIOD_8K * scale)
        self._window = round(_CORRELATION_WINDOW_8K * scale)
        self._block = sample_rate * _BLOCK_MS // 1000
        self._history_len = _MAX_PERIODS * self._max_period + self._max_period // 4
        self._history: Float = np.zeros(self._history_len)
        self._source: Float = self._history
        self._lost = 0  # samples concealed in the current loss (0: not in a loss)
        self._period = self._max_period
        self._periods_used = 1
        self._buffer: Float = np.zeros(self._max_period)
        self._position = 0
        self._queue: Float = np.zeros(0)

    @property
    def concealing(self) -> bool:
        return self._lost > 0

    @property
    def period(self) -> int:
        """The pitch period (samples) used for the current or last loss."""
        return self._period

    def reset(self) -> None:
        """Forget the signal (a new stream starts)."""
        self._history = np.zeros(self._history_len)
        self._lost = 0
        self._queue = np.zeros(0)

    def good_frame(self, frame: Pcm) -> Pcm:
        """Record a decoded frame; right after a loss its start is cross-faded with the concealment."""
        samples = frame.astype(np.float64)
        if self._lost:
            ramp_len = min(self._end_ramp_length(), samples.shape[0])
            if ramp_len:
                tail = self._synthesize(ramp_len)
                fade_in = np.arange(1, ramp_len + 1, dtype=np.float64) / (ramp_len + 1)
                samples[:ramp_len] = fade_in * samples[:ramp_len] + (1.0 - fade_in) * tail
            self._lost = 0
            self._remember(samples)
            return _to_pcm(samples)
        self._remember(samples)
        return frame

    def conceal(self, samples: int) -> Pcm:
        """``samples`` of synthetic audio continuing the last good signal."""
        if samples <= 0:
            raise CodecError(f"samples to conceal must be positive, got {samples}")
        if not self._lost:
            # Synthesis reads the signal as it was when the loss began (history keeps our own output).
            self._source = self._history.copy()
            self._period = self._estimate_period()
            self._periods_used = 1
            self._buffer = self._period_buffer(1)
            self._position = 0
            self._queue = np.zeros(0)
        out = self._synthesize(samples)
        self._remember(out)
        return _to_pcm(out)

    # --- synthesis ---------------------------------------------------------------------------------

    def _synthesize(self, count: int) -> Float:
        """The next ``count`` concealment samples (advances the loss position)."""
        out = np.empty(count)
        done = 0
        while done < count:
            block_index = self._lost // self._block
            wanted_periods = min(_MAX_PERIODS, block_index + 1)
            if wanted_periods > self._periods_used:
                self._widen(wanted_periods)
            until_block_end = self._block - self._lost % self._block
            chunk = min(count - done, until_block_end)
            piece = self._read(chunk)
            offsets = self._lost + np.arange(chunk)
            out[done : done + chunk] = piece * self._gain(offsets)
            self._lost += chunk
            done += chunk
        return out

    def _gain(self, offsets: npt.NDArray[np.int_]) -> Float:
        blocks_after_first = np.maximum(offsets - self._block, 0) / self._block
        return np.maximum(1.0 - _ATTENUATION_PER_BLOCK * blocks_after_first, 0.0)

    def _read(self, count: int) -> Float:
        """The next ``count`` samples of the repetition (queued blend samples first)."""
        queued = self._queue[:count]
        self._queue = self._queue[count:]
        rest = count - queued.shape[0]
        indices = (self._position + np.arange(rest)) % self._buffer.shape[0]
        self._position = int((self._position + rest) % self._buffer.shape[0])
        return np.concatenate((queued, self._buffer[indices]))

    def _widen(self, periods: int) -> None:
        """Repeat ``periods`` pitch periods from now on, fading from the old repetition into the new."""
        fade_len = max(1, self._period // 4)
        position_before = self._position
        old = self._read(fade_len)
        # Each extra period starts the new stretch one period earlier, so the same phase sits later in it.
        shift = (periods - self._periods_used) * self._period
        self._buffer = self._period_buffer(periods)
        self._periods_used = periods
        self._position = (position_before + shift) % self._buffer.shape[0]
        new = self._read(fade_len)
        fade_in = np.arange(1, fade_len + 1, dtype=np.float64) / (fade_len + 1)
        self._queue = fade_in * new + (1.0 - fade_in) * old

    def _period_buffer(self, periods: int) -> Float:
        """The last ``periods`` pitch periods with their end blended into the samples before them, so
        that repeating the stretch has no step where it wraps around."""
        length = periods * self._period
        buffer = self._source[-length:].copy()
        fade_len = max(1, self._period // 4)
        before = self._source[-length - fade_len : -length]
        fade_in = np.arange(1, fade_len + 1, dtype=np.float64) / (fade_len + 1)
        buffer[-fade_len:] = (1.0 - fade_in) * buffer[-fade_len:] + fade_in * before
        return buffer

    def _end_ramp_length(self) -> int:
        """4 ms, plus 4 ms per further 10 ms lost, at most 10 ms."""
        four_ms = self.sample_rate * 4 // 1000
        extra_blocks = (self._lost - 1) // self._block
        return min(four_ms * (1 + extra_blocks), self._block)

    # --- analysis ----------------------------------------------------------------------------------

    def _estimate_period(self) -> int:
        """The lag maximising the normalized cross-correlation between the last window and the signal
        that lag earlier. Above 8 kHz the search runs on an 8 kHz block-mean copy first, then is refined
        at full rate around the coarse lag (as Appendix I searches coarse then fine)."""
        factor = self.sample_rate // 8000 if self.sample_rate % 8000 == 0 else 1
        if factor == 1:
            return _best_lag(self._history, self._window, self._min_period, self._max_period)
        usable = self._history.shape[0] - self._history.shape[0] % factor
        coarse_signal = self._history[-usable:].reshape(-1, factor).mean(axis=1)
        coarse = _best_lag(
            coarse_signal, self._window // factor, self._min_period // factor, self._max_period // factor
        )
        low = max(self._min_period, (coarse - 1) * factor)
        high = min(self._max_period, (coarse + 1) * factor)
        return _best_lag(self._history, self._window, low, high)

    def _remember(self, samples: Float) -> None:
        if samples.shape[0] >= self._history_len:
            self._history = samples[-self._history_len :].copy()
        else:
            self._history = np.concatenate((self._history[samples.shape[0] :], samples))


def _to_pcm(samples: Float) -> Pcm:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def _best_lag(signal: Float, window: int, min_lag: int, max_lag: int) -> int:
    """The lag in [min_lag, max_lag] whose segment best matches the last ``window`` samples of
    ``signal`` (normalized cross-correlation); ``max_lag`` for silence."""
    target = signal[-window:]
    span = signal[-(window + max_lag) : signal.shape[0] - min_lag]
    # correlation[k] pairs target with span[k : k + window], i.e. with lag = max_lag - k.
    correlation = np.correlate(span, target, mode="valid")
    squares = np.concatenate(([0.0], np.cumsum(span * span)))
    energy = squares[window:] - squares[:-window]
    if not np.dot(target, target) > 0.0 or not np.any(energy > 1e-9):
        return max_lag
    score = correlation / np.sqrt(np.maximum(energy, 1e-9))
    return int(max_lag - int(np.argmax(score)))
