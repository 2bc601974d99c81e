from barapi.cli import main

main()
