//! Shared test support: namespaces and packet building.
#![allow(dead_code)]

pub mod dplab;
pub mod netns;
pub mod packet;
pub mod vrrplab;
