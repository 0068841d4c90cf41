from mastery.cli import main

main()
