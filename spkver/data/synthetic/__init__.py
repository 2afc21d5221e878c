"""The built-in synthetic corpus: source-filter voices (`voice`) recorded in sessions over channels (`corpus`)."""
