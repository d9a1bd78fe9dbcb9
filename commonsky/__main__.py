from commonsky.cli import main

main()
