from workers.agent.main import main

raise SystemExit(main())
