//! egret-admin
