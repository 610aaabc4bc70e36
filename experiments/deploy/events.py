"""Events from sliding-window probabilities: one sound, one event.

Windows of 5 s slide every hop (1 s by default), so a sound is seen by several overlapping
windows and its class's probability rises and falls across them.  A single threshold would
open and close an event each time the probability wobbles around it; hysteresis uses two:
    an event of class c opens at the first window with p_c >= on_c,
    and stays open while p_c >= off_c = hysteresis * on_c (hysteresis < 1);
it closes at the first window below off_c, ending where the last window above it ended.
Its confidence is the largest p_c it reached, its level (dBFS) the loudest of its windows.
"""
import math

# The default watch list: emergencies and noise a city monitor listens for, with the
# probability that opens an event of each.
WATCH = {"siren": 0.5, "glass_breaking": 0.5, "crying_baby": 0.5, "car_horn": 0.5,
         "chainsaw": 0.5, "dog": 0.5}
HYSTERESIS = 0.6


def dbfs(window):
    """The window's RMS level in dB relative to full scale (a full-scale sine is -3 dBFS);
    -inf for silence."""
    mean_square = float((window.astype("float64") ** 2).mean()) if len(window) else 0.0
    return 10 * math.log10(mean_square) if mean_square > 0 else float("-inf")


class EventDetector:
    """Feed it each window's (start, end, probabilities, level); it returns the events that
    close.  ``watch``: class name -> opening probability."""

    def __init__(self, classes, watch=None, hysteresis=HYSTERESIS):
        watch = dict(WATCH if watch is None else watch)
        unknown = sorted(set(watch) - set(classes))
        if unknown:
            raise ValueError(f"not classes of this model: {', '.join(unknown)} (it has "
                             f"{', '.join(classes)})")
        for name, on in watch.items():
            if not 0 < on <= 1:
                raise ValueError(f"the threshold of {name} must be in (0, 1], got {on}")
        if not 0 < hysteresis <= 1:
            raise ValueError(f"hysteresis must be in (0, 1], got {hysteresis}")
        self.watch = {classes.index(name): (name, on, on * hysteresis)
                      for name, on in watch.items()}
        self.open = {}  # class index -> the event so far

    def update(self, start, end, probs, level):
        closed = []
        for c, (name, on, off) in self.watch.items():
            p = float(probs[c])
            event = self.open.get(c)
            if event is None:
                if p >= on:
                    self.open[c] = dict(start=start, end=end, confidence=p, dbfs=level,
                                        **{"class": name})
            elif p >= off:
                event.update(end=end, confidence=max(event["confidence"], p),
                             dbfs=max(event["dbfs"], level))
            else:
                closed.append(self.open.pop(c))
        return [rounded(e) for e in sorted(closed, key=lambda e: e["start"])]

    def finish(self):
        """The events still open at the end of the stream."""
        closed, self.open = sorted(self.open.values(), key=lambda e: e["start"]), {}
        return [rounded(e) for e in closed]


def rounded(event):
    return {"start": round(event["start"], 3), "end": round(event["end"], 3),
            "class": event["class"], "confidence": round(event["confidence"], 4),
            "dbfs": round(event["dbfs"], 1) if math.isfinite(event["dbfs"]) else None}
