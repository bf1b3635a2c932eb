from gateway.mock.cli import main

main()
