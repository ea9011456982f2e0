"""open_clip's own trainer (`python -m open_clip_train.main ...`), adapted for the benchmark in two ways:

* `--model-config FILE`: an open_clip model-config JSON registered under its file stem (open_clip has no
  flag for one), so the peer trains exactly our architecture;
* open_clip 3.3's `group_by_keys_nothrow` reads `filesample["fname"]` from every item webdataset's tar
  expander yields; webdataset 1.x yields an empty dict at the end of each shard, which raises KeyError and
  kills the worker. The items without a file name are dropped before open_clip's grouping sees them (a
  no-op on webdataset 0.2, which never yields them).

    .venv/bin/python bench/open_clip_peer.py --model-config demo-vit.json --model demo-vit <open_clip args>
"""

from __future__ import annotations

import sys
from pathlib import Path


def adapt_open_clip_data() -> None:
    import open_clip_train.data as data

    original = data.group_by_keys_nothrow
    if getattr(original, "adapted", False):
        return

    def group_by_keys_nothrow(files, *args, **kwargs):
        return original((item for item in files if item.get("fname") is not None), *args, **kwargs)

    group_by_keys_nothrow.adapted = True
    data.group_by_keys_nothrow = group_by_keys_nothrow


def main(argv: list[str]) -> None:
    import open_clip
    from open_clip_train.main import main as open_clip_main

    if "--model-config" in argv:
        at = argv.index("--model-config")
        open_clip.add_model_config(Path(argv[at + 1]))
        argv = argv[:at] + argv[at + 2 :]
    adapt_open_clip_data()
    open_clip_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
