from workers.processor.main import main

raise SystemExit(main())
