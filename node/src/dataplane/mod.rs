//! Applies a plan to the kernel (rtnetlink, nftables): idempotent, touches only what hybridnet owns.
