from mimo_watchd.cli import main

raise SystemExit(main())
