"""A local web app to hear, see and classify a sound: ``python -m experiments.serve``.

The page (``assets/``) takes an audio file, dropped or chosen, or a recording from the
microphone made into WAV in the browser, posts it to the JSON API and shows what comes back:
the top classes as bars, the waveform with each sliding window's label, the log-Mel input, the
most active feature maps of every stage, and the model card from the checkpoint's metadata.

- ``models.py``: the checkpoints the server offers, each loaded once, and their cards;
- ``analysis.py``: one upload classified, and its pictures (the figures of
  ``experiments.visualize``);
- ``server.py``: the HTTP side (standard library), its limits and its errors;
- ``__main__.py``: the command.
Every asset is served by the package: the page works without a network.
"""
