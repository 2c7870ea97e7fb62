//! Tiny 64-bit guests: a few instructions wrapped in a minimal ELF that the VMM boots
//! exactly like a vmlinux (long mode, identity-mapped low 4 GiB).

/// Guest-physical load address (the VMM requires entry points at or above 1 MiB).
pub const LOAD_ADDR: u64 = 0x10_0000;
const EHDR: usize = 64;
const PHDR: usize = 56;

/// x86_64 machine-code builder for the handful of instructions the tests need.
#[derive(Default, Clone)]
pub struct TinyProgram {
    code: Vec<u8>,
}

impl TinyProgram {
    pub fn new() -> Self {
        Self::default()
    }

    /// `mov dx, 0x3f8; mov al, b; out dx, al` for each byte.
    pub fn serial_str(mut self, s: &str) -> Self {
        self.code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]);
        for b in s.bytes() {
            self.code.extend_from_slice(&[0xb0, b, 0xee]);
        }
        self
    }

    /// `mov eax, addr; mov byte [rax], value` (addr below 4 GiB).
    pub fn mmio_write_u8(mut self, addr: u32, value: u8) -> Self {
        self.code.push(0xb8);
        self.code.extend_from_slice(&addr.to_le_bytes());
        self.code.extend_from_slice(&[0xc6, 0x00, value]);
        self
    }

    /// Boot-timer magic write.
    pub fn boot_timer(self) -> Self {
        self.mmio_write_u8(0xd000_0000, 123)
    }

    /// `mov al, 0xfe; out 0x64, al`: i8042 CPU reset.
    pub fn reset(mut self) -> Self {
        self.code.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64]);
        self
    }

    /// `ud2` with a null IDT: #UD -> #GP -> #DF -> triple fault.
    pub fn triple_fault(mut self) -> Self {
        self.code.extend_from_slice(&[0x0f, 0x0b]);
        self
    }

    /// `jmp $`: spin forever.
    pub fn spin(mut self) -> Self {
        self.code.extend_from_slice(&[0xeb, 0xfe]);
        self
    }

    /// Emits `count` serial bytes in a loop (`mov ecx, count; loop: out dx, al; dec ecx; jnz`).
    pub fn serial_flood(mut self, byte: u8, count: u32) -> Self {
        self.code
            .extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0xb0, byte, 0xb9]);
        self.code.extend_from_slice(&count.to_le_bytes());
        self.code.extend_from_slice(&[0xee, 0xff, 0xc9, 0x75, 0xfb]);
        self
    }

    /// Counts forever in the byte at guest address `addr` (below 4 GiB), writing each
    /// count to the serial port as a letter `a`..=`p` (count mod 16), with a busy wait of
    /// `delay` iterations between letters. The count lives in memory and the letter in
    /// registers, so a resumed snapshot that continues the sequence has both right.
    pub fn serial_counter(mut self, addr: u32, delay: u32) -> Self {
        self.code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0xbb]); // mov dx, 0x3f8; mov ebx,
        self.code.extend_from_slice(&addr.to_le_bytes());
        let body: &[u8] = &[
            0xfe, 0x03, // inc byte [rbx]
            0x8a, 0x0b, // mov cl, [rbx]
            0x80, 0xe1, 0x0f, // and cl, 0x0f
            0x80, 0xc1, b'a', // add cl, 'a'
            0x88, 0xc8, // mov al, cl
            0xee, // out dx, al
            0xb9, // mov ecx, delay
        ];
        self.code.extend_from_slice(body);
        self.code.extend_from_slice(&delay.to_le_bytes());
        self.code.extend_from_slice(&[0xff, 0xc9, 0x75, 0xfc]); // dec ecx; jnz -4
        let back = -(body.len() as i8 + 4 + 4 + 2);
        self.code.extend_from_slice(&[0xeb, back as u8]); // jmp to the inc
        self
    }

    pub fn code(&self) -> Vec<u8> {
        self.code.clone()
    }

    pub fn elf(&self) -> Vec<u8> {
        elf_image(&self.code, 62)
    }
}

/// A one-segment ELF64 executable whose code starts right after the headers.
pub fn elf_image(code: &[u8], machine: u16) -> Vec<u8> {
    let entry = LOAD_ADDR + (EHDR + PHDR) as u64;
    let total = (EHDR + PHDR + code.len()) as u64;
    let mut v = Vec::with_capacity(total as usize);
    v.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    v.extend_from_slice(&[0u8; 8]);
    v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    v.extend_from_slice(&machine.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    v.extend_from_slice(&entry.to_le_bytes());
    v.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    v.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    v.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    v.extend_from_slice(&(EHDR as u16).to_le_bytes());
    v.extend_from_slice(&(PHDR as u16).to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    v.extend_from_slice(&0u16.to_le_bytes()); // e_shentsize
    v.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    v.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
                                              // PT_LOAD, R+X
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&5u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_vaddr
    v.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_paddr
    v.extend_from_slice(&total.to_le_bytes()); // p_filesz
    v.extend_from_slice(&total.to_le_bytes()); // p_memsz
    v.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    v.extend_from_slice(code);
    v
}

/// A minimal bzImage: boot sector with a protocol 2.15 setup header, one setup sector,
/// then the protected-mode part whose 64-bit entry (offset 0x200) holds `code`.
pub fn bzimage(code: &[u8]) -> Vec<u8> {
    const SETUP_SECTS: u8 = 1;
    let pm_offset = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut v = vec![0u8; pm_offset + 0x200];
    v[0x1f1] = SETUP_SECTS;
    v[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    v[0x202..0x206].copy_from_slice(b"HdrS");
    v[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // protocol version
    v[0x211] = 0x01; // loadflags: LOADED_HIGH
    v[0x214..0x218].copy_from_slice(&(LOAD_ADDR as u32).to_le_bytes()); // code32_start
    v.extend_from_slice(code);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes() {
        let img = TinyProgram::new().spin().elf();
        assert_eq!(img.len(), EHDR + PHDR + 2);
        assert_eq!(&img[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([img[18], img[19]]), 62);
    }
}
