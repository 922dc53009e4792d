//! Capture analysis: reads pcap/pcapng and says who sent each RST and why.
