//! `authgate keygen` and `authgate hash-password`: key pairs as PEM, Argon2id PHC strings.
