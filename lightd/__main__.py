from lightd.cli import main

raise SystemExit(main())
