//! Host audit: kernel counters, sysctls, sockets, firewall rules, proxy configs and logs.
