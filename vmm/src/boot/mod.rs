//! Linux boot: kernel loading, command line and the zero page.

pub mod cmdline;
pub mod loader;
pub mod params;
