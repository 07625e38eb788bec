;; filter_on_a: keeps the records whose value contains "a"; a value that is not UTF-8 is the
;; module's error (Rust's Utf8Error text, kind Filter).

  (data (i32.const 512) "a")

  (func (export "filter") (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    (local $status i32)
    (local.set $status (call $open (local.get $ptr) (local.get $len) (local.get $version)))
    (if (local.get $status) (then (return (local.get $status))))
    (call $filter_containing (i32.const 512) (i32.const 1)))
