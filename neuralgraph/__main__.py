from neuralgraph.cli import main

raise SystemExit(main())
