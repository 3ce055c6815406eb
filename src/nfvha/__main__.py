from nfvha.cli import main

main()
