"""The fine-tuning demo's new captions: every emoji name becomes its German one (whole names, longest first), half
the emoji samples are re-captioned, and the images and other files of the shard pass through byte for byte.
(`python -m demo.finetune` itself needs a `make demo` output: it is run by hand, see the README.)"""

import io
import tarfile

from demo.finetune import GERMAN, german_caption, recaption_shard
from demo.source import EMOJI, emoji_name


def test_every_demo_emoji_has_a_german_name_and_names_are_replaced_whole():
    assert set(GERMAN) == {emoji_name(char) for char in EMOJI}
    assert german_caption("a monkey face next to a key on a red background") == \
        "a affe next to a schlüssel on a red background"
    assert german_caption("a slice of pizza left of a red apple") == "a pizzastück left of a apfel"
    assert german_caption("the handwritten digit seven") is None


def test_a_shard_keeps_its_images_and_half_its_emoji_captions_turn_german(tmp_path):
    source = tmp_path / "00000.tar"
    files = {}
    with tarfile.open(source, "w") as archive:
        for index in range(40):
            key = f"{index:08d}"
            caption = "a dog face on a blue background" if index % 4 else "the number 3 written by hand"
            for suffix, payload in (("jpg", bytes([index]) * 50), ("txt", caption.encode()), ("json", b"{}")):
                files[f"{key}.{suffix}"] = payload
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    samples, changed = recaption_shard(source, tmp_path / "out" / "00000.tar")
    with tarfile.open(tmp_path / "out" / "00000.tar") as archive:
        written = {member.name: archive.extractfile(member).read() for member in archive}
    assert written.keys() == files.keys() and samples == 40
    assert all(written[name] == payload for name, payload in files.items() if not name.endswith(".txt"))
    german = [name for name in written if written[name] == b"a hund on a blue background"]
    assert len(german) == changed and 8 <= changed <= 22  # about half of the 30 emoji captions
    assert all(files[name] == b"a dog face on a blue background" for name in german)
