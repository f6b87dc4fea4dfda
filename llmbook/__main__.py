from llmbook.assets import main

raise SystemExit(main())
