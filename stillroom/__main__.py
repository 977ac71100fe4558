from stillroom.cli.main import main

main()
