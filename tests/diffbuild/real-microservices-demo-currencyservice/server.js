// Stand-in for the currency service.
const ms = require('ms');
console.log('currency service up for', ms(1000));
