from vramcalc._fastpath import main

main()
