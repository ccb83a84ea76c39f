//! A lossy link in virtual time between the real engine and protocol clients.
