from homepanel.cli import main

raise SystemExit(main())
