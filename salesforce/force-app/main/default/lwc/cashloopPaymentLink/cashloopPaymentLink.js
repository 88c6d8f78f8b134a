// Opens a cashloop hosted payment page for the Opportunity this component sits on: the Apex
// method asks cashloop (POST /v1/payment_links through the Cashloop Named Credential) for a
// link, and the page opens in a new tab. Card data never passes through Salesforce.
import { LightningElement, api } from 'lwc';
import createLink from '@salesforce/apex/CashloopPaymentLinks.createLink';

export default class CashloopPaymentLink extends LightningElement {
    @api recordId;
    url;
    amount;
    error;
    busy = false;

    async handleOpen() {
        this.busy = true;
        this.error = undefined;
        try {
            const link = await createLink({ opportunityId: this.recordId });
            this.url = link.url;
            this.amount = `${link.amount} ${link.currency}`;
            window.open(this.url, '_blank', 'noopener');
        } catch (e) {
            this.error = (e && e.body && e.body.message) || 'The payment page could not be created.';
        } finally {
            this.busy = false;
        }
    }
}
