"""The frozen app's entry point (PyInstaller runs this file): `uda-studio ...` starts the app;
`uda-studio uda ARGS` runs the `uda` command line inside the same bundle (`uda-studio uda
models`, `uda-studio uda predict ...`)."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    if len(sys.argv) > 1 and sys.argv[1] == "uda":
        from uda_core.cli import main as cli_main

        sys.exit(cli_main(sys.argv[2:]))
    from uda_studio.main import main

    sys.exit(main())
