//! egret-dns
