"""Brokers and markets: the embedded simulated market now; paper, Dhan and Definedge later."""
