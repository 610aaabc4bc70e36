"""load_audio on generated files, broken files, and the ESC-50 clips (both layouts)."""
import os

import numpy as np
import pytest
import soundfile as sf

import dsp
from experiments import esc50


def tone(sr, seconds=1.0, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_wav_is_mixed_down_and_resampled(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = tone(44100), tone(44100, freq=880.0)
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    y, sr = dsp.load_audio(path, sr=16000)
    assert sr == 16000 and y.dtype == np.float32 and y.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(y))
    peaks = sorted(np.argsort(spectrum)[-2:])          # 1 Hz bins for a 1 s clip
    assert peaks == [440, 880]
    both, sr = dsp.load_audio(path, mono=False)
    assert both.shape == (2, 44100) and sr == 44100
    np.testing.assert_allclose(both.mean(axis=0), dsp.load_audio(path)[0], atol=1e-6)


def test_flac_and_ogg_read(tmp_path):
    for ext in ("flac", "ogg"):
        path = tmp_path / f"t.{ext}"
        sf.write(path, tone(16000), 16000)
        y, sr = dsp.load_audio(path)
        assert sr == 16000 and abs(len(y) - 16000) < 100 and np.abs(y).max() <= 1.0


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        dsp.load_audio(tmp_path / "nope.wav")


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(dsp.AudioError, match="empty.wav.*empty"):
        dsp.load_audio(path)


def test_garbage_file_is_named(tmp_path):
    path = tmp_path / "garbage.flac"
    path.write_bytes(os.urandom(4000))
    with pytest.raises(dsp.AudioError, match="garbage.flac.*cannot decode"):
        dsp.load_audio(path)


def test_truncated_file_is_named(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, tone(16000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[:30])  # header cut mid-way
    with pytest.raises(dsp.AudioError, match="cut.flac"):
        dsp.load_audio(path)


def test_zero_length_audio_is_named(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(dsp.AudioError, match="zero.wav.*no samples"):
        dsp.load_audio(path)


def test_nan_audio_is_named(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.full(100, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(dsp.AudioError, match="nan.wav.*NaN"):
        dsp.load_audio(path)


def test_esc50_sample_of_clips_loads(esc50_root):
    rows = esc50.read_metadata(esc50_root)
    assert len(rows) == 2000
    assert sorted({r["fold"] for r in rows}) == [1, 2, 3, 4, 5]
    for row in rows[::50]:
        y, sr = dsp.load_audio(esc50.audio_path(esc50_root, row["filename"]), sr=16000)
        assert sr == 16000 and y.dtype == np.float32
        assert abs(len(y) - 80000) <= 1 and np.abs(y).max() <= 1.0
        assert np.isfinite(y).all()


def test_official_44k_wav_layout_gives_the_same_features(esc50_root, tmp_path):
    """Build the official layout (44.1 kHz .wav named as in the csv) for a few clips and check
    that the features match those from the 16 kHz copy (resampled back to 16 kHz)."""
    rows = esc50.read_metadata(esc50_root)[:4]
    (tmp_path / "meta").mkdir()
    (tmp_path / "audio").mkdir()
    with open(tmp_path / "meta" / "esc50.csv", "w") as f:
        f.write("filename,fold,target,category,esc10,src_file,take\n")
        for r in rows:
            f.write(f"{r['filename']},{r['fold']},{r['target']},{r['category']},False,0,A\n")
            y, _ = dsp.load_audio(esc50.audio_path(esc50_root, r["filename"]))
            sf.write(tmp_path / "audio" / r["filename"], dsp.resample(y, 16000, 44100), 44100,
                     subtype="FLOAT")
    cfg = dict(sr=16000, n_fft=1024, hop_length=320, n_mels=64, fmin=0.0, fmax=8000.0)
    official, labels, _ = esc50.load_features(str(tmp_path), cfg, tmp_path / "c1",
                                              progress=False)
    ours, labels2, _ = esc50.load_features(esc50_root, cfg, tmp_path / "c2", rows=rows,
                                           progress=False)
    assert official.shape == ours.shape == (4, 64, 251)
    np.testing.assert_array_equal(labels, labels2)
    # Round-trip resampling loses only what lies near Nyquist: the dB images agree closely
    # where there is energy.
    loud = ours > ours.max() - 40
    assert np.median(np.abs(official - ours)[loud]) < 0.5


def test_dataset_not_found_message(tmp_path, monkeypatch):
    monkeypatch.delenv("ESC50_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(esc50.DatasetNotFound, match="--download"):
        esc50.find_dataset()
    with pytest.raises(esc50.DatasetNotFound, match="given by --data"):
        esc50.find_dataset(str(tmp_path / "elsewhere"))


def test_feature_cache_is_rebuilt_when_config_changes(esc50_root, tmp_path):
    rows = esc50.read_metadata(esc50_root)[:2]
    cfg = dict(sr=16000, n_fft=512, hop_length=256, n_mels=32, fmin=0.0, fmax=8000.0)
    a, _, _ = esc50.load_features(esc50_root, cfg, tmp_path, rows=rows, progress=False)
    b, _, _ = esc50.load_features(esc50_root, dict(cfg, n_mels=40), tmp_path, rows=rows,
                                  progress=False)
    assert a.shape[1] == 32 and b.shape[1] == 40
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_source_digest_changes_with_any_dsp_source(tmp_path):
    import shutil
    copy = tmp_path / "dsp"
    shutil.copytree(os.path.dirname(dsp.__file__), copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert esc50.source_digest(str(copy)) == esc50.source_digest()
    features = copy / "features.py"
    features.write_text(features.read_text().replace("top_db=80.0", "top_db=81.0", 1))
    assert esc50.source_digest(str(copy)) != esc50.source_digest()


def test_feature_cache_is_rebuilt_when_the_dsp_code_changes(esc50_root, tmp_path,
                                                            monkeypatch):
    """Features cached by other DSP code are never read back: the cache's name changes."""
    rows = esc50.read_metadata(esc50_root)[:1]
    cfg = dict(sr=16000, n_fft=512, hop_length=256, n_mels=32, fmin=0.0, fmax=8000.0)
    key = esc50.feature_key(esc50_root, rows, cfg)
    esc50.load_features(esc50_root, cfg, tmp_path, rows=rows, progress=False)
    monkeypatch.setattr(esc50, "source_digest", lambda folder=None: "other code")
    assert esc50.feature_key(esc50_root, rows, cfg) != key
    esc50.load_features(esc50_root, cfg, tmp_path, rows=rows, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_download_unpacks_and_verifies_an_archive(tmp_path):
    """--download on a local archive shaped like the official one (file:// URL)."""
    import zipfile
    archive = tmp_path / "master.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ESC-50-master/meta/esc50.csv",
                   "filename,fold,target,category,esc10,src_file,take\n"
                   "1-1-A-0.wav,1,0,dog,True,1,A\n")
        wav = tmp_path / "clip.wav"
        sf.write(wav, tone(44100, 0.1), 44100)
        z.write(wav, "ESC-50-master/audio/1-1-A-0.wav")
    dest = tmp_path / "data" / "ESC-50"
    esc50.download(str(dest), url=archive.as_uri())
    assert esc50.find_dataset(str(dest)) == str(dest)
    assert esc50.audio_path(str(dest), "1-1-A-0.wav").endswith("1-1-A-0.wav")
    with pytest.raises(ValueError, match="SHA-256"):
        esc50.download(str(tmp_path / "other"), url=archive.as_uri(), sha256="0" * 64)


@pytest.mark.parametrize("subtype,channels", [("PCM_16", 1), ("PCM_32", 2), ("PCM_U8", 1)])
def test_wav_is_read_without_soundfile_as_with_it(tmp_path, monkeypatch, subtype, channels):
    """A machine without libsndfile (a GPU machine, say) still reads PCM WAV files, to the
    same numbers."""
    import sys
    path = str(tmp_path / "tone.wav")
    t = np.arange(8000) / 8000
    y = np.stack([0.5 * np.sin(2 * np.pi * 300 * t), 0.25 * np.cos(2 * np.pi * 50 * t)][:channels])
    sf.write(path, y.T, 8000, subtype=subtype)
    expected = dsp.load_audio(path, sr=16000, mono=False)
    monkeypatch.setitem(sys.modules, "soundfile", None)         # import soundfile fails
    got = dsp.load_audio(path, sr=16000, mono=False)
    assert got[1] == expected[1] == 16000
    np.testing.assert_allclose(got[0], expected[0], atol=1e-7)
    # and block by block, mixed down, as the mono whole file
    blocks = np.concatenate(list(dsp.audio_blocks(path, sr=16000, block_seconds=0.3)))
    np.testing.assert_allclose(blocks, dsp.load_audio(path, sr=16000)[0], atol=1e-7)
    flac = str(tmp_path / "tone.flac")
    monkeypatch.delitem(sys.modules, "soundfile")
    sf.write(flac, y.T, 8000)
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(dsp.AudioError, match="only PCM WAV files"):
        dsp.load_audio(flac)
