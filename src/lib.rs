//! cashloop
